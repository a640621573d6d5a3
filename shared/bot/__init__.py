"""The calling bot's own behaviour: answer, record once, thank, hang up, settle on hang-up."""

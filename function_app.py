"""Azure Functions entry point: wiring only. Each blueprint is one trigger's story."""

import azure.functions as func

from blueprints.audit import bp as audit
from blueprints.cleanup import bp as cleanup
from blueprints.downloads import bp as downloads
from blueprints.events import bp as events
from blueprints.health import bp as health
from blueprints.messages import bp as messages
from blueprints.notifications import bp as notifications
from blueprints.prompts import bp as prompts
from blueprints.record_api import bp as record_api
from blueprints.recordings import bp as recordings
from blueprints.transcriptions import bp as transcriptions
from shared.logevents import quiet_library_loggers
from shared.telemetry import configure_from_environment

# The worker forwards every INFO record: the Azure SDK and httpx would log each request.
quiet_library_loggers()
# Application Insights through OpenTelemetry when it is configured; nothing at all otherwise.
configure_from_environment()

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)

app.register_functions(health)
app.register_functions(record_api)
app.register_functions(notifications)
app.register_functions(prompts)
app.register_functions(recordings)
app.register_functions(cleanup)
app.register_functions(downloads)
app.register_functions(transcriptions)
app.register_functions(audit)
app.register_functions(messages)
app.register_functions(events)

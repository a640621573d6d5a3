"""Microsoft Graph calling: wire models, result codes and (in ``client``) a small calls client."""

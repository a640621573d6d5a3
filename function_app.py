"""Azure Functions entry point: wiring only. Each blueprint is one trigger's story."""

import azure.functions as func

from blueprints.health import bp as health

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)

app.register_functions(health)

"""The one FunctionApp. Every trigger lives in a Blueprint registered here."""

from __future__ import annotations

import azure.functions as func

from function_app.triggers import api, console, events, reconciler

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(events.bp)
app.register_functions(api.bp)
app.register_functions(reconciler.bp)
app.register_functions(console.bp)

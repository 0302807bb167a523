"""Trigger functions, grouped in Blueprints registered on the one FunctionApp (function_app.app)."""

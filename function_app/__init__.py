"""The outside of the retrain service: the Functions app, settings, adapters, local host and CLI."""

"""Adapters behind the ports of handlers/: each takes its client or connection in the constructor."""

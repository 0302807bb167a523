"""The root script the Functions worker imports (PYTHON_SCRIPT_FILE_NAME=main.py).

It must hold exactly one FunctionApp among its globals, and nothing else the worker would
index. A root ``function_app.py`` would be shadowed by the ``function_app/`` package, hence
this name.
"""

from function_app.app import app

__all__ = ["app"]

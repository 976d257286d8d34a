"""Thin typer applications, one module per tool: parse, call the library, print."""

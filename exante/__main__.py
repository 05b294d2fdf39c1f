from exante.cli import entry

entry()

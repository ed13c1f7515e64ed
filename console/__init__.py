"""The Deploy Console desktop program: embeds the server in the Qt loop (qasync)."""

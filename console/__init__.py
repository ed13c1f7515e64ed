"""The Deploy Console desktop program: the window (PySide6 on qasync) and the
server it carries, in a child process (`console.server_process`)."""

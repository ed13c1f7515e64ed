"""Reference servers the benchmarks compare against (Node.js, bare python-socketio)."""

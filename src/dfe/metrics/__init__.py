"""Usage metrics (charts) and process metrics (Prometheus)."""

"""Stage 8, report: one run's metrics, report.html, rejections and checkpoints."""

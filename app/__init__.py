"""Finetune Studio WebUI. Keep this file free of heavy imports: launch.sh runs app.cli with the system Python."""

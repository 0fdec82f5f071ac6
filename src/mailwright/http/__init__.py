"""The admin listener: metrics, health, the JSON API and the web page (server.py)."""

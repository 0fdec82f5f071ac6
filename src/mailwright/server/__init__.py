"""The asyncio transport of the server role: listeners and one session per connection."""

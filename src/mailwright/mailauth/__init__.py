"""Mail authentication: the one DNS resolver every lookup uses (dns.py), and checks built on it."""

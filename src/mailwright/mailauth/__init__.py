"""Mail authentication: SRS, DKIM signing, inbound verdicts, and the one DNS resolver (dns.py)."""

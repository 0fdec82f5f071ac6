"""Mail authentication: SRS, DKIM signing, the verdicts on inbound mail and their DNS."""

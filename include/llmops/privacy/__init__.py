"""Privacy controls: the table of personal-data types (``pii_types``), their detectors
(``detectors``), scanning, redaction, pseudonymisation and dataset policies (``pii``), envelope
encryption (``crypto``), keys (``keys``) and key rotation (``rotation``).

Nothing is imported here, so the spec loader can read the type table without the rest.
"""

"""Configuration: every field declared once (``config_defaults``), checked and upgraded
(``config_checks``)."""

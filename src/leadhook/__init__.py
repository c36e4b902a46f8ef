"""leadhook: CRM lead behaviour events, delivered to signed webhooks in order per lead."""

__version__ = "0.2.0"

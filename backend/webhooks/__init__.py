"""Outgoing webhooks: endpoints admins register, and the signed deliveries of each event to them."""

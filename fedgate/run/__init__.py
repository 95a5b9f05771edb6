"""Running federations: simulations, server and client processes, results documents.

This layer sits above the core, the transports and the gateway and drives them as a user
would; nothing below it imports it.
"""

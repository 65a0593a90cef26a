"""Local stand-ins for the Azure services Percept Curator talks to: Azurite, MM and Custom Vision."""

"""Local fakes of external services for tests: GitHub's REST API and a smart-HTTP git server.

They are honest, strict stand-ins reachable over real sockets, not mocks of our own code.
"""

"""The operations console (served at ``/ops/``): operators and their sessions, read models, live pages.

Modules are imported where they are used, so importing this package stays cheap for the call path.
"""

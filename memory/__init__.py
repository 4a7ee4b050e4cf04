"""What the agent has learned: episodic memory (SQLite) and parametric memory (the model store).

Imports nothing else from the project (docs/ARCHITECTURE.md, "Packages").
"""

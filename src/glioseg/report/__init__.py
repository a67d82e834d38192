"""Study-level outputs: tables and figures."""

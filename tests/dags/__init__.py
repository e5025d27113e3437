"""DAG integrity, policy and parse-cost hygiene tests (no servers)."""

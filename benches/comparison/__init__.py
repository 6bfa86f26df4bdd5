"""The comparison behind benches/RESULTS.md: the agent against the tools a platform team would use instead."""

"""FoleyGRAM (papers.md §4): GRAM-aligned video/text/audio encoders, retrieval and Stable Audio conditioning."""

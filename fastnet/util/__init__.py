"""L0 utilities with no knowledge of networks or data: the atomic file writer and the JSON / CSV
formats built on it (files), threads (threads), progress lines (progress), matplotlib on Agg
(plotting) and the version. Imports nothing of fastnet but ``fastnet.errors``."""

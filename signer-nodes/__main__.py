"""``python -m signer_nodes``: the node CLI (see :mod:`signer_nodes.cli`)."""

from signer_nodes.cli import main

main()

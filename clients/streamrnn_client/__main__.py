"""`python -m streamrnn_client`: the streamrnn-client command."""
from streamrnn_client.cli import main

main()

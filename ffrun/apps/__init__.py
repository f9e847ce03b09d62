"""One thin module per console command. Apps use the layers below and never import each other."""

"""Reading keepalived-style configuration: lexer → parser → loader → model."""

"""The HTTP face of the twin (gridtwin serve): OGC API Features and more, on twin.trust."""

// Translation unit that only carries the shared test precompiled header.

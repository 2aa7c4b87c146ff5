"""The science of each page, one module each; every function returns tidy pandas DataFrames."""

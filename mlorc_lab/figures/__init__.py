"""Figure and table functions that draw from record DataFrames."""

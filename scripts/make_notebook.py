"""Write a thin-driver notebook: a tagged parameters cell, then code cells.

Usage: python scripts/make_notebook.py OUT.ipynb TITLE CELL_FILE
where CELL_FILE holds the code cells separated by lines "# %%".
"""

import sys

import nbformat


def main() -> None:
    out_path, title, cells_path = sys.argv[1:4]
    with open(cells_path, encoding="utf-8") as stream:
        chunks = [chunk.strip("\n") for chunk in stream.read().split("# %%\n")]
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cells = [nbformat.v4.new_markdown_cell(title)]
    parameters = nbformat.v4.new_code_cell(chunks[0])
    parameters.metadata["tags"] = ["parameters"]
    cells.append(parameters)
    cells.extend(nbformat.v4.new_code_cell(chunk) for chunk in chunks[1:] if chunk)
    notebook.cells = cells
    nbformat.write(notebook, out_path)


if __name__ == "__main__":
    main()

"""Write the example data sets under examples/data/: a wine CSV and a small image folder of shapes.

    python examples/make_data.py
"""

from pathlib import Path

from modelyard.data.synthetic import write_shapes_folder, write_wine_csv

here = Path(__file__).resolve().parent / "data"
print(write_wine_csv(here / "wine.csv"))
print(write_shapes_folder(here / "shapes", per_class=100, size=32))

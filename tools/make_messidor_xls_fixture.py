"""Writes spec/fixtures/messidor/Annotation_Base11.xls: a MESSIDOR-style annotation
sheet (BIFF8 .xls, as the data set ships them) for spec/data_spec.lua, which reads it
through catdoc's xls2csv when that is installed.

Columns as MESSIDOR's: "Image name", "Ophthalmologic department", "Retinopathy grade",
"Risk of macular edema " (with its trailing space); grades and risks as numbers.

    pip install xlwt==1.3.0 && python3 tools/make_messidor_xls_fixture.py
"""
import os

import xlwt

ROWS = [
    ("20051019_38557_0100_PP.tif", "Service Ophtalmologie Lariboisi\u00e8re", 0, 0),
    ("20051020_43808_0100_PP.tif", "Service Ophtalmologie Lariboisi\u00e8re", 1, 0),
    ("20051020_43832_0100_PP.tif", "Service Ophtalmologie Lariboisi\u00e8re", 2, 1),
    ("20051020_44261_0100_PP.tif", "Service Ophtalmologie Lariboisi\u00e8re", 3, 2),
]


def main():
    book = xlwt.Workbook(encoding="utf-8")
    sheet = book.add_sheet("Feuil1")
    header = ["Image name", "Ophthalmologic department", "Retinopathy grade", "Risk of macular edema "]
    for col, name in enumerate(header):
        sheet.write(0, col, name)
    for row, values in enumerate(ROWS, start=1):
        for col, value in enumerate(values):
            sheet.write(row, col, value)
    out = os.path.join(os.path.dirname(__file__), "..", "spec", "fixtures", "messidor", "Annotation_Base11.xls")
    book.save(out)
    print("wrote", os.path.normpath(out))


if __name__ == "__main__":
    main()

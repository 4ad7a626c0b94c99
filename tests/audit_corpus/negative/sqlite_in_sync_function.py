# expect: none
# sqlite3 in synchronous code.
import sqlite3


def list_notes(path):
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT * FROM notes").fetchall()

# expect: RT801
# sqlite3 opened inside an async endpoint.
import sqlite3


async def list_notes(db_path):
    connection = sqlite3.connect(db_path)
    try:
        return connection.execute("SELECT * FROM notes").fetchall()
    finally:
        connection.close()

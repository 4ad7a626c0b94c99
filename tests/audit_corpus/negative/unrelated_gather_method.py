# expect: none
# A method named gather on something that is not asyncio.
class Harvester:
    def gather(self, *fields):
        return fields


def harvest(fields):
    return Harvester().gather(*(f.upper() for f in fields))

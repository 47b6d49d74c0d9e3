"""A deterministic corpus of news-like English sentences, made from templates.

Nothing is downloaded: the same seed and size give the same sentences on every machine,
so two runs (and the served and in-process sides of one run) see identical input.
Each sentence carries a mix of the things en_core_web_sm tags (people, companies, places,
money, dates, percentages); about one in ten has no entity at all, as in real news.
"""

import random

SEED = 20240605

FIRST = [
    "James",
    "Maria",
    "Wei",
    "Fatima",
    "Olivia",
    "Rahul",
    "Sofia",
    "Daniel",
    "Aiko",
    "Carlos",
    "Emma",
    "Kwame",
    "Laura",
    "Hiroshi",
    "Anna",
    "Pedro",
    "Grace",
    "Omar",
    "Elena",
    "Thomas",
    "Priya",
    "Lucas",
    "Chloe",
    "Ivan",
]
LAST = [
    "Smith",
    "Garcia",
    "Chen",
    "Khan",
    "Johnson",
    "Patel",
    "Rossi",
    "Miller",
    "Tanaka",
    "Lopez",
    "Brown",
    "Mensah",
    "Schmidt",
    "Sato",
    "Kowalski",
    "Silva",
    "Wilson",
    "Haddad",
    "Petrova",
    "Anderson",
    "Sharma",
    "Martin",
    "Dubois",
    "Novak",
]
COMPANIES = [
    "Apple",
    "Microsoft",
    "Google",
    "Amazon",
    "Siemens",
    "Toyota",
    "Samsung",
    "Goldman Sachs",
    "Barclays",
    "Nestle",
    "Volkswagen",
    "IBM",
    "Intel",
    "Pfizer",
    "Unilever",
    "Deutsche Bank",
    "Netflix",
    "Boeing",
    "Airbus",
    "Sony",
    "Shell",
    "General Electric",
    "Morgan Stanley",
    "HSBC",
]
PLACES = [
    "London",
    "Paris",
    "Berlin",
    "New York",
    "Tokyo",
    "San Francisco",
    "Madrid",
    "Toronto",
    "Sydney",
    "Mumbai",
    "Chicago",
    "Rome",
    "Seoul",
    "Boston",
    "Singapore",
    "Brazil",
    "Germany",
    "Japan",
    "France",
    "Canada",
    "India",
    "China",
    "Texas",
    "California",
]
MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]
ROLES = [
    "chief executive",
    "finance chief",
    "spokeswoman",
    "spokesman",
    "chairman",
    "head of research",
    "analyst",
    "economist",
]
SECTORS = [
    "cloud computing",
    "electric vehicles",
    "chip manufacturing",
    "online advertising",
    "retail banking",
    "drug development",
    "streaming",
    "logistics",
]

TEMPLATES = [
    "{company} said on {weekday} it would buy a {place} startup for {money}.",
    "{person}, the {role} of {company}, told reporters in {place} that sales rose {pct}.",
    "Shares of {company} fell {pct} in {place} after the company cut its forecast on {date}.",
    "{company} plans to open a new office in {place} by {month} {year}, {person} said.",
    "The deal, valued at {money}, would make {company} the largest player in {sector}.",
    "{person} joined {company} in {year} after a decade at {company2}.",
    "Regulators in {place} fined {company} {money} on {date} over its {sector} business.",
    "{company} and {company2} agreed on {weekday} to merge their {sector} units.",
    "In {month}, {person} will step down as {role} of {company}, the board said.",
    "Revenue at {company} grew to {money} in the quarter ending {month} {year}.",
    "{person} flew to {place} on {weekday} to meet officials from {company}.",
    "Analysts at {company} expect {place} to grow {pct} next year.",
    "{company} hired {number} engineers in {place} last year, {person} said.",
    "The {place} factory of {company} will close on {date}, costing {number} jobs.",
    "{person} said the market for {sector} was growing faster than expected.",
    "Investors sold bonds on {weekday} as prices in {place} rose {pct} from a year earlier.",
    "Talks between {company} and the government of {place} ended without a deal.",
    "The company said it would keep its headquarters where they are.",
    "Nobody expected the results to be this strong, one trader said.",
    "Prices rose again this week, and most economists think they will keep rising.",
]


def _fill(template, rng):
    def person():
        return f"{rng.choice(FIRST)} {rng.choice(LAST)}"

    def money():
        amount = rng.choice([rng.randint(2, 950), round(rng.uniform(1.1, 99.9), 1)])
        return f"${amount} {rng.choice(['million', 'billion'])}"

    company, company2 = rng.sample(COMPANIES, 2)
    values = {
        "person": person(),
        "company": company,
        "company2": company2,
        "place": rng.choice(PLACES),
        "money": money(),
        "weekday": rng.choice(WEEKDAYS),
        "month": rng.choice(MONTHS),
        "year": rng.randint(1998, 2025),
        "date": f"{rng.choice(MONTHS)} {rng.randint(1, 28)}",
        "role": rng.choice(ROLES),
        "pct": f"{rng.randint(1, 40)} percent",
        "sector": rng.choice(SECTORS),
        "number": f"{rng.randint(2, 900):,}",
    }
    return template.format(**values)


def sentences(n, seed=SEED):
    """n sentences; the same n and seed give the same list everywhere."""
    rng = random.Random(seed)
    return [_fill(rng.choice(TEMPLATES), rng) for _ in range(n)]


def novel_texts(n, seed=SEED):
    """n texts full of words no vocabulary has seen: order ids, invented names and
    surnames, typos of common words, as a service's real traffic brings. Every text has
    new strings, so a server that keeps every string it sees grows with each one."""
    rng = random.Random(seed + 1)
    letters = "abcdefghijklmnopqrstuvwxyz"

    def word(k):
        return "".join(rng.choice(letters) for _ in range(k))

    def typo(w):
        i = rng.randrange(len(w))
        return w[:i] + rng.choice(letters) + w[i + 1 :]

    out = []
    for i in range(n):
        name = f"{word(1).upper()}{word(rng.randint(4, 8))}"
        surname = f"{word(1).upper()}{word(rng.randint(5, 9))}"
        company = f"{word(1).upper()}{word(rng.randint(3, 7))}{rng.choice(['ex', 'ia', 'on'])}"
        out.append(
            f"{name} {surname} {typo('ordered')} item {word(3).upper()}-{i:07d} from "
            f"{company} in {rng.choice(PLACES)} on {rng.choice(MONTHS)} "
            f"{rng.randint(1, 28)}, ref {word(6)}{rng.randint(100, 999)}."
        )
    return out


if __name__ == "__main__":  # a look at what the benchmark sends
    for s in sentences(10):
        print(s)

"""Money for Rentledger: integer minor units plus an ISO 4217 code.

Every rounding rule (proration, percentages, tax) lives in `money.rounding`;
nothing else in the code base divides money.
"""

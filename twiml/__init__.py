"""Everything Twilio-HTTP: TwiML documents, signatures, public URLs."""

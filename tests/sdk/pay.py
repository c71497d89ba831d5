"""Pays a deposit address like a customer's wallet would, with tronpy (an independent TRON SDK): a
TRC-20 `transfer` of the given token, built, signed and broadcast by tronpy, waited for until mined.

Usage: pay.py ENDPOINT PAYER_KEY_HEX TOKEN_CONTRACT TO_ADDRESS UNITS
Prints one JSON line: {"txid", "block_number", "result"}.
"""

import json
import sys

from tronpy import Tron
from tronpy.keys import PrivateKey
from tronpy.providers import HTTPProvider

endpoint, payer_hex, token, to, units = sys.argv[1:6]
client = Tron(HTTPProvider(endpoint))
payer = PrivateKey(bytes.fromhex(payer_hex))
owner = payer.public_key.to_base58check_address()

contract = client.get_contract(token)
call = contract.functions.transfer(to, int(units)).with_owner(owner).fee_limit(50_000_000)
sent = call.build().sign(payer).broadcast()
info = sent.wait(timeout=60, interval=0.2)

print(json.dumps({
    "txid": sent.txid,
    "block_number": info["blockNumber"],
    "result": info["receipt"].get("result"),
}))

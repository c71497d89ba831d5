"""Drives a guarantor devnet with tronpy, an independent TRON implementation: a TRX transfer and a
TRC-20 transfer, built, signed and broadcast by tronpy, then balances read back through tronpy.

Usage: drive_devnet.py ENDPOINT GENESIS_KEY_HEX USDT_CONTRACT
Prints one JSON line with what tronpy saw.
"""

import json
import sys

from tronpy import Tron
from tronpy.keys import PrivateKey
from tronpy.providers import HTTPProvider

endpoint, genesis_hex, usdt = sys.argv[1:4]
client = Tron(HTTPProvider(endpoint))
genesis = PrivateKey(bytes.fromhex(genesis_hex))
owner = genesis.public_key.to_base58check_address()
recipient = PrivateKey(bytes.fromhex("42" * 32)).public_key.to_base58check_address()

trx = client.trx.transfer(owner, recipient, 3_000_000).build().sign(genesis).broadcast()
trx_info = trx.wait(timeout=30, interval=0.2)

contract = client.get_contract(usdt)
call = contract.functions.transfer(recipient, 1_500_000).with_owner(owner).fee_limit(50_000_000)
token = call.build().sign(genesis).broadcast()
token_info = token.wait(timeout=30, interval=0.2)

print(json.dumps({
    "recipient": recipient,
    "trx_txid": trx.txid,
    "trx_block": trx_info["blockNumber"],
    "token_txid": token.txid,
    "token_result": token_info["receipt"].get("result"),
    "trx_balance": str(client.get_account_balance(recipient)),
    "usdt_balance": contract.functions.balanceOf(recipient),
    "decimals": contract.functions.decimals(),
}))

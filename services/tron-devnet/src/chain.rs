//! The devnet's chain: accounts with TRX, one TRC-20 token, blocks, transactions and their receipts.
//! Transactions are validated when broadcast (signature, expiration, TaPoS, duplicates, bandwidth) and
//! executed when a block includes them, charging bandwidth and energy and burning TRX as TRON does.

use std::collections::{BTreeMap, HashMap};

use guarantor_tron::abi::{self, TransferLog};
use guarantor_tron::proto::{
    Transaction, TransactionRaw, TransferContract, TriggerSmartContract, TRANSFER_CONTRACT, TRIGGER_SMART_CONTRACT,
};
use guarantor_tron::{keys, tx, PrivateKey, TronAddress};
use prost::Message;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The documented dev-only genesis key: it holds the devnet's TRX and USDT. Never use it elsewhere.
pub const GENESIS_PRIVATE_KEY: &str = "6a2f1b8e5c4d3a29180716f5e4d3c2b1a09f8e7d6c5b4a3928171615f4e3d2c1";
pub const GENESIS_TRX_SUN: i64 = 1_000_000_000 * SUN_PER_TRX;
pub const GENESIS_USDT_UNITS: u64 = 1_000_000_000 * 1_000_000;
pub const SUN_PER_TRX: i64 = 1_000_000;

/// Chain parameters, as `/wallet/getchainparameters` reports them.
pub const ENERGY_FEE_SUN: i64 = 100;
pub const BANDWIDTH_FEE_SUN: i64 = 1_000;
pub const FREE_NET_LIMIT: i64 = 600;
pub const CREATE_ACCOUNT_FEE_SUN: i64 = 1_000_000;
pub const CREATE_ACCOUNT_BANDWIDTH_FEE_SUN: i64 = 100_000;
/// Energy of a USDT transfer to an address that holds USDT, and to one that never did.
pub const TRANSFER_ENERGY_EXISTING: i64 = 64_285;
pub const TRANSFER_ENERGY_NEW_HOLDER: i64 = 130_285;
/// Energy a reverted transfer (balance too low) consumes.
pub const REVERT_ENERGY: i64 = 11_000;
/// Bytes a transaction's result adds to its bandwidth (java-tron's MAX_RESULT_SIZE_IN_TX).
const RESULT_BYTES: i64 = 64;
const MAX_EXPIRATION_MS: i64 = 24 * 3600 * 1000;
const DAY_MS: i64 = 24 * 3600 * 1000;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Account {
    pub balance: i64,
    pub create_time: i64,
    /// Free bandwidth used on `net_day` (a day index of block time).
    pub free_net_used: i64,
    pub net_day: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Block {
    pub number: i64,
    pub id: String,
    pub parent: String,
    pub timestamp: i64,
    pub txids: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Log {
    /// The contract's 20-byte address, hex, as java-tron reports it (without 0x41).
    pub address: String,
    pub topics: Vec<String>,
    pub data: String,
}

/// A transaction's receipt (`/wallet/gettransactioninfobyid`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Receipt {
    pub fee: i64,
    pub energy_usage_total: i64,
    pub energy_fee: i64,
    pub net_usage: i64,
    pub net_fee: i64,
    /// For contract calls: SUCCESS, REVERT or OUT_OF_ENERGY.
    pub result: Option<String>,
    pub failed: bool,
    pub res_message: Option<String>,
    pub contract_result: String,
    pub contract_address: Option<String>,
    pub logs: Vec<Log>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TxRecord {
    /// The signed `Transaction` protobuf, hex.
    pub bytes: String,
    pub block: Option<i64>,
    pub receipt: Option<Receipt>,
}

impl TxRecord {
    pub fn transaction(&self) -> Transaction {
        let bytes = hex::decode(&self.bytes).unwrap_or_default();
        Transaction::decode(bytes.as_slice()).unwrap_or_default()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Token {
    pub address: TronAddress,
    pub name: String,
    pub symbol: String,
    pub decimals: u32,
    pub balances: BTreeMap<TronAddress, u64>,
}

/// A broadcast refused, with java-tron's code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub code: &'static str,
    pub message: String,
}

fn refused(code: &'static str, message: impl Into<String>) -> Refused {
    Refused {
        code,
        message: message.into(),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Chain {
    pub blocks: Vec<Block>,
    pub accounts: BTreeMap<TronAddress, Account>,
    pub token: Token,
    pub txs: HashMap<String, TxRecord>,
    pub pending: Vec<String>,
    pub solidify_lag: i64,
}

/// What a contract parameter is, decoded.
#[derive(Debug)]
pub enum Action {
    Transfer(TransferContract),
    Trigger(TriggerSmartContract),
}

pub fn action_of(raw: &TransactionRaw) -> Result<Action, Refused> {
    let [contract] = raw.contract.as_slice() else {
        return Err(refused(
            "CONTRACT_VALIDATE_ERROR",
            "a transaction must have exactly one contract",
        ));
    };
    let value = contract
        .parameter
        .as_ref()
        .map(|p| p.value.as_slice())
        .unwrap_or_default();
    let undecodable = |_| refused("OTHER_ERROR", "contract parameter does not decode");
    match contract.r#type {
        TRANSFER_CONTRACT => TransferContract::decode(value)
            .map(Action::Transfer)
            .map_err(undecodable),
        TRIGGER_SMART_CONTRACT => TriggerSmartContract::decode(value)
            .map(Action::Trigger)
            .map_err(undecodable),
        other => Err(refused(
            "CONTRACT_VALIDATE_ERROR",
            format!("contract type {other} is not supported by the devnet"),
        )),
    }
}

fn address(bytes: &[u8]) -> Result<TronAddress, Refused> {
    let bytes: [u8; 21] = bytes
        .try_into()
        .map_err(|_| refused("CONTRACT_VALIDATE_ERROR", "Invalid address"))?;
    TronAddress::from_bytes(bytes).map_err(|_| refused("CONTRACT_VALIDATE_ERROR", "Invalid address"))
}

fn block_id(number: i64, parent: &str, timestamp: i64, txids: &[String]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(number.to_be_bytes());
    hasher.update(parent.as_bytes());
    hasher.update(timestamp.to_be_bytes());
    for txid in txids {
        hasher.update(txid.as_bytes());
    }
    let mut id: [u8; 32] = hasher.finalize().into();
    // Like java-tron, a block id starts with its number.
    id[..8].copy_from_slice(&number.to_be_bytes());
    hex::encode(id)
}

impl Chain {
    pub fn genesis(now_ms: i64, usdt: TronAddress, solidify_lag: i64) -> Self {
        let genesis = genesis_key().address();
        let mut accounts = BTreeMap::new();
        accounts.insert(
            genesis,
            Account {
                balance: GENESIS_TRX_SUN,
                create_time: now_ms,
                ..Account::default()
            },
        );
        let parent = "0".repeat(64);
        let block = Block {
            number: 0,
            id: block_id(0, &parent, now_ms, &[]),
            parent,
            timestamp: now_ms,
            txids: Vec::new(),
        };
        Self {
            blocks: vec![block],
            accounts,
            token: Token {
                address: usdt,
                name: "Tether USD".into(),
                symbol: "USDT".into(),
                decimals: 6,
                balances: BTreeMap::from([(genesis, GENESIS_USDT_UNITS)]),
            },
            txs: HashMap::new(),
            pending: Vec::new(),
            solidify_lag,
        }
    }

    pub fn head(&self) -> &Block {
        self.blocks.last().expect("the chain has a genesis block")
    }

    /// The newest irreversible block: `solidify_lag` blocks behind the head.
    pub fn solid_head(&self) -> &Block {
        let number = (self.head().number - self.solidify_lag).max(0);
        &self.blocks[usize::try_from(number).unwrap_or(0)]
    }

    pub fn block(&self, number: i64) -> Option<&Block> {
        usize::try_from(number).ok().and_then(|n| self.blocks.get(n))
    }

    pub fn is_solid(&self, number: i64) -> bool {
        number <= self.solid_head().number
    }

    /// Token balances as of the solidified head: current balances minus what later blocks moved.
    pub fn token_balance(&self, owner: &TronAddress, solid: bool) -> u64 {
        let now = self.token.balances.get(owner).copied().unwrap_or(0);
        if !solid {
            return now;
        }
        let solid_number = self.solid_head().number;
        let mut balance = i128::from(now);
        for block in self.blocks.iter().filter(|b| b.number > solid_number) {
            for log in block
                .txids
                .iter()
                .filter_map(|id| self.txs.get(id))
                .filter_map(|r| r.receipt.as_ref())
                .flat_map(|r| &r.logs)
            {
                if let Some(transfer) = decode_log(log) {
                    if transfer.to == *owner {
                        balance -= i128::from(transfer.amount);
                    }
                    if transfer.from == *owner {
                        balance += i128::from(transfer.amount);
                    }
                }
            }
        }
        u64::try_from(balance).unwrap_or(0)
    }

    /// Validates a signed transaction and queues it for the next block.
    pub fn broadcast(&mut self, transaction: Transaction) -> Result<String, Refused> {
        let raw = transaction
            .raw_data
            .clone()
            .ok_or_else(|| refused("OTHER_ERROR", "no raw_data"))?;
        let raw_bytes = raw.encode_to_vec();
        let txid = hex::encode(tx::txid(&raw_bytes));
        if self.txs.contains_key(&txid) {
            return Err(refused("DUP_TRANSACTION_ERROR", "dup trans"));
        }
        let head = self.head().clone();
        if raw.expiration <= head.timestamp || raw.expiration > head.timestamp + MAX_EXPIRATION_MS {
            return Err(refused(
                "TRANSACTION_EXPIRATION_ERROR",
                format!(
                    "Transaction expiration, transaction expiration time is {}, but headBlockTime is {}",
                    raw.expiration, head.timestamp
                ),
            ));
        }
        self.check_tapos(&raw)?;
        let action = action_of(&raw)?;
        let owner = match &action {
            Action::Transfer(transfer) => address(&transfer.owner_address)?,
            Action::Trigger(call) => address(&call.owner_address)?,
        };
        let signature = transaction
            .signature
            .first()
            .ok_or_else(|| refused("SIGERROR", "miss sig or contract"))?;
        let signer = keys::recover(&tx::txid(&raw_bytes), signature)
            .map_err(|_| refused("SIGERROR", "Validate signature error"))?;
        if signer != owner {
            return Err(refused(
                "SIGERROR",
                format!(
                    "Validate signature error: {} is signed by {} but it is not contained of permission",
                    hex::encode(tx::txid(&raw_bytes)),
                    signer
                ),
            ));
        }
        let account = self.accounts.get(&owner).ok_or_else(|| {
            refused(
                "CONTRACT_VALIDATE_ERROR",
                format!("Validate {} error, no OwnerAccount.", contract_name(&action)),
            )
        })?;
        match &action {
            Action::Transfer(transfer) => {
                let to = address(&transfer.to_address)?;
                if to == owner {
                    return Err(refused("CONTRACT_VALIDATE_ERROR", "Cannot transfer TRX to yourself."));
                }
                if transfer.amount <= 0 {
                    return Err(refused("CONTRACT_VALIDATE_ERROR", "Amount must be greater than 0."));
                }
                let fee = if self.accounts.contains_key(&to) {
                    0
                } else {
                    CREATE_ACCOUNT_FEE_SUN + CREATE_ACCOUNT_BANDWIDTH_FEE_SUN
                };
                if account.balance < transfer.amount + fee {
                    return Err(refused(
                        "CONTRACT_VALIDATE_ERROR",
                        "Validate TransferContract error, balance is not sufficient.",
                    ));
                }
            }
            Action::Trigger(call) => {
                if address(&call.contract_address)? != self.token.address {
                    return Err(refused(
                        "CONTRACT_VALIDATE_ERROR",
                        "No contract or not a smart contract",
                    ));
                }
                if call.call_value > 0 && account.balance < call.call_value {
                    return Err(refused("CONTRACT_VALIDATE_ERROR", "balance is not sufficient"));
                }
            }
        }
        let size = i64::try_from(transaction.encoded_len()).unwrap_or(i64::MAX) + RESULT_BYTES;
        let creates_account = matches!(&action, Action::Transfer(t) if !self.accounts.contains_key(&address(&t.to_address).unwrap_or(owner)));
        if !creates_account
            && self.free_net_left(&owner, head.timestamp) < size
            && account.balance < size * BANDWIDTH_FEE_SUN
        {
            return Err(refused("BANDWITH_ERROR", "Account resource insufficient error."));
        }
        self.txs.insert(
            txid.clone(),
            TxRecord {
                bytes: hex::encode(transaction.encode_to_vec()),
                block: None,
                receipt: None,
            },
        );
        self.pending.push(txid.clone());
        Ok(txid)
    }

    fn check_tapos(&self, raw: &TransactionRaw) -> Result<(), Refused> {
        let tapos = || refused("TAPOS_ERROR", "Tapos check error");
        let low: [u8; 2] = raw.ref_block_bytes.as_slice().try_into().map_err(|_| tapos())?;
        let low = i64::from(u16::from_be_bytes(low));
        let head = self.head().number;
        let candidate = head - ((head - low).rem_euclid(65_536));
        let block = self.block(candidate).ok_or_else(tapos)?;
        let id = hex::decode(&block.id).map_err(|_| tapos())?;
        if id.get(8..16) == Some(raw.ref_block_hash.as_slice()) {
            Ok(())
        } else {
            Err(tapos())
        }
    }

    fn free_net_left(&self, owner: &TronAddress, now_ms: i64) -> i64 {
        match self.accounts.get(owner) {
            Some(account) if account.net_day == now_ms / DAY_MS => FREE_NET_LIMIT - account.free_net_used,
            Some(_) => FREE_NET_LIMIT,
            None => 0,
        }
    }

    /// Produces one block with every pending transaction.
    pub fn produce_block(&mut self, now_ms: i64) -> i64 {
        let parent = self.head().clone();
        let timestamp = now_ms.max(parent.timestamp + 1);
        let pending = std::mem::take(&mut self.pending);
        let number = parent.number + 1;
        let mut included = Vec::with_capacity(pending.len());
        for txid in pending {
            let Some(record) = self.txs.get(&txid) else { continue };
            let transaction = record.transaction();
            match self.execute(&transaction, timestamp) {
                Some(receipt) => {
                    if let Some(record) = self.txs.get_mut(&txid) {
                        record.block = Some(number);
                        record.receipt = Some(receipt);
                    }
                    included.push(txid);
                }
                // No longer valid (e.g. the balance went to an earlier transaction): dropped.
                None => {
                    self.txs.remove(&txid);
                }
            }
        }
        self.blocks.push(Block {
            number,
            id: block_id(number, &parent.id, timestamp, &included),
            parent: parent.id,
            timestamp,
            txids: included,
        });
        number
    }

    /// Charges bandwidth: free bandwidth first, else burned TRX. Returns (net_usage, net_fee).
    fn charge_bandwidth(&mut self, owner: &TronAddress, size: i64, now_ms: i64) -> Option<(i64, i64)> {
        let free_left = self.free_net_left(owner, now_ms);
        let account = self.accounts.get_mut(owner)?;
        if account.net_day != now_ms / DAY_MS {
            account.net_day = now_ms / DAY_MS;
            account.free_net_used = 0;
        }
        if free_left >= size {
            account.free_net_used += size;
            Some((size, 0))
        } else if account.balance >= size * BANDWIDTH_FEE_SUN {
            account.balance -= size * BANDWIDTH_FEE_SUN;
            Some((0, size * BANDWIDTH_FEE_SUN))
        } else {
            None
        }
    }

    fn execute(&mut self, transaction: &Transaction, now_ms: i64) -> Option<Receipt> {
        let raw = transaction.raw_data.as_ref()?;
        let size = i64::try_from(transaction.encoded_len()).ok()? + RESULT_BYTES;
        match action_of(raw).ok()? {
            Action::Transfer(transfer) => {
                let owner = address(&transfer.owner_address).ok()?;
                let to = address(&transfer.to_address).ok()?;
                let creates = !self.accounts.contains_key(&to);
                let mut receipt = Receipt::default();
                if creates {
                    let fee = CREATE_ACCOUNT_FEE_SUN + CREATE_ACCOUNT_BANDWIDTH_FEE_SUN;
                    let account = self.accounts.get_mut(&owner)?;
                    if account.balance < transfer.amount + fee {
                        return None;
                    }
                    account.balance -= fee;
                    receipt.fee = fee;
                    receipt.net_fee = CREATE_ACCOUNT_BANDWIDTH_FEE_SUN;
                } else {
                    let (usage, fee) = self.charge_bandwidth(&owner, size, now_ms)?;
                    receipt.net_usage = usage;
                    receipt.net_fee = fee;
                    receipt.fee = fee;
                }
                let account = self.accounts.get_mut(&owner)?;
                if account.balance < transfer.amount {
                    return None;
                }
                account.balance -= transfer.amount;
                let recipient = self.accounts.entry(to).or_insert_with(|| Account {
                    create_time: now_ms,
                    ..Account::default()
                });
                recipient.balance += transfer.amount;
                Some(receipt)
            }
            Action::Trigger(call) => {
                let owner = address(&call.owner_address).ok()?;
                let (net_usage, net_fee) = self.charge_bandwidth(&owner, size, now_ms)?;
                let mut receipt = Receipt {
                    net_usage,
                    net_fee,
                    contract_address: Some(self.token.address.to_hex()),
                    ..Receipt::default()
                };
                let balance = self.accounts.get(&owner)?.balance;
                let energy_limit = raw.fee_limit.min(balance) / ENERGY_FEE_SUN;
                let (outcome, energy) = self.simulate_transfer(&owner, &call.data);
                let (result, energy) = if energy > energy_limit {
                    ("OUT_OF_ENERGY", energy_limit)
                } else {
                    (outcome, energy)
                };
                let energy_fee = energy * ENERGY_FEE_SUN;
                self.accounts.get_mut(&owner)?.balance -= energy_fee;
                receipt.energy_usage_total = energy;
                receipt.energy_fee = energy_fee;
                receipt.fee = net_fee + energy_fee;
                receipt.result = Some(result.to_owned());
                if result == "SUCCESS" {
                    let (to, amount) = abi::decode_transfer(&call.data).ok()?;
                    *self.token.balances.entry(owner).or_default() -= amount;
                    *self.token.balances.entry(to).or_default() += amount;
                    let (topics, data) = abi::encode_transfer_log(&TransferLog {
                        from: owner,
                        to,
                        amount,
                    });
                    receipt.logs.push(Log {
                        address: hex::encode(self.token.address.evm_bytes()),
                        topics: topics.iter().map(hex::encode).collect(),
                        data: hex::encode(data),
                    });
                    receipt.contract_result = format!("{:064x}", 1);
                } else {
                    receipt.failed = true;
                    receipt.res_message = Some(if result == "REVERT" {
                        "REVERT opcode executed".into()
                    } else {
                        "Not enough energy".into()
                    });
                }
                Some(receipt)
            }
        }
    }

    /// What a token call would do: (SUCCESS or REVERT, energy it needs).
    pub fn simulate_transfer(&self, owner: &TronAddress, data: &[u8]) -> (&'static str, i64) {
        match abi::decode_transfer(data) {
            Ok((to, amount)) if self.token_balance(owner, false) >= amount => {
                let holds = self.token.balances.get(&to).is_some_and(|b| *b > 0);
                (
                    "SUCCESS",
                    if holds {
                        TRANSFER_ENERGY_EXISTING
                    } else {
                        TRANSFER_ENERGY_NEW_HOLDER
                    },
                )
            }
            Ok(_) | Err(_) => ("REVERT", REVERT_ENERGY),
        }
    }

    /// Sends TRX and/or USDT from the genesis account with real signed transactions.
    pub fn faucet(
        &mut self,
        to: &TronAddress,
        trx_sun: Option<i64>,
        usdt_units: Option<u64>,
        now_ms: i64,
    ) -> Result<(Option<String>, Option<String>), Refused> {
        let key = genesis_key();
        let head = self.head().clone();
        let id: [u8; 32] = hex::decode(&head.id)
            .ok()
            .and_then(|id| id.try_into().ok())
            .ok_or_else(|| refused("OTHER_ERROR", "bad head id"))?;
        let header = tx::TxHeader::from_block(head.number, &id, now_ms, 60_000);
        let token = self.token.address;
        let mut broadcast = |raw: TransactionRaw| {
            let signed = tx::sign(raw.encode_to_vec(), &key);
            let transaction = Transaction {
                raw_data: Some(raw),
                signature: vec![signed.signature.to_vec()],
                ret: Vec::new(),
            };
            self.broadcast(transaction)
        };
        let trx = trx_sun
            .map(|sun| broadcast(tx::trx_transfer(&header, &key.address(), to, sun)))
            .transpose()?;
        let usdt = usdt_units
            .map(|units| {
                broadcast(tx::trc20_transfer(
                    &header,
                    &key.address(),
                    &token,
                    to,
                    units,
                    100 * SUN_PER_TRX,
                ))
            })
            .transpose()?;
        Ok((trx, usdt))
    }
}

fn contract_name(action: &Action) -> &'static str {
    match action {
        Action::Transfer(_) => "TransferContract",
        Action::Trigger(_) => "TriggerSmartContract",
    }
}

pub fn decode_log(log: &Log) -> Option<TransferLog> {
    let topics: Vec<[u8; 32]> = log
        .topics
        .iter()
        .map(|t| hex::decode(t).ok().and_then(|b| b.try_into().ok()))
        .collect::<Option<_>>()?;
    abi::decode_transfer_log(&topics, &hex::decode(&log.data).ok()?).ok()
}

pub fn genesis_key() -> PrivateKey {
    PrivateKey::from_hex(GENESIS_PRIVATE_KEY).expect("the genesis key is a valid secp256k1 key")
}

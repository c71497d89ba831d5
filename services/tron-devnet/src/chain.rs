//! The devnet's chain: accounts with TRX, two TRC-20 tokens (the USDT-like one and a look-alike with
//! the same name, symbol and decimals at another address), blocks, transactions and their receipts.
//! The state after each unsolidified block is kept, so solidified reads see the solidified state and
//! a reorganisation can replace the newest unsolidified blocks.
//! Transactions are validated when broadcast (signature, expiration, TaPoS, duplicates, bandwidth) and
//! executed when a block includes them, charging bandwidth and energy and burning TRX as TRON does.

use std::collections::{BTreeMap, HashMap, VecDeque};

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
    /// The txid of the stored transaction (sha256 of its raw data).
    pub fn txid(&self) -> Option<String> {
        let bytes = hex::decode(&self.bytes).ok()?;
        let raw = Transaction::decode(bytes.as_slice()).ok()?.raw_data?;
        Some(hex::encode(tx::txid(&raw.encode_to_vec())))
    }

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

/// Balances as of the end of one block.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    pub number: i64,
    pub accounts: BTreeMap<TronAddress, Account>,
    pub usdt: BTreeMap<TronAddress, u64>,
    pub lookalike: BTreeMap<TronAddress, u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Chain {
    pub blocks: Vec<Block>,
    pub accounts: BTreeMap<TronAddress, Account>,
    pub token: Token,
    /// Same name, symbol and decimals as `token`, another address: never to be credited as USDT.
    #[serde(default = "lookalike_token")]
    pub lookalike: Token,
    pub txs: HashMap<String, TxRecord>,
    pub pending: Vec<String>,
    pub solidify_lag: i64,
    /// The state after each block from the solidified head to the head, oldest first.
    #[serde(default)]
    pub history: VecDeque<Snapshot>,
    /// Token transfers by the addresses they involve, oldest first (TronGrid's listing reads it
    /// instead of scanning the chain); rebuilt from the blocks when a chain is loaded.
    #[serde(skip)]
    pub index: HashMap<TronAddress, Vec<Indexed>>,
    /// A stalled solidified head (a fault): solidification does not pass this block.
    #[serde(skip)]
    pub solid_cap: Option<i64>,
    /// Changes (blocks, reorganisations) applied since genesis: the position in the state log.
    #[serde(default)]
    pub changes: u64,
    /// A fault: broadcasts are accepted and then lost, never mined.
    #[serde(skip)]
    pub drop_pending: bool,
    /// A fault: contract calls need this percentage of the energy a constant call estimates.
    #[serde(skip)]
    pub energy_percent: Option<u32>,
}

/// A token transfer in the address index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Indexed {
    pub block: i64,
    pub timestamp: i64,
    pub txid: String,
    pub contract: TronAddress,
    pub from: TronAddress,
    pub to: TronAddress,
    pub amount: u64,
}

/// The look-alike token's address: a fixed, documented dev-only contract.
pub fn lookalike_address() -> TronAddress {
    let digest = sha3::Keccak256::digest(b"guarantor devnet look-alike USDT");
    let mut evm = [0u8; 20];
    evm.copy_from_slice(&digest[12..]);
    TronAddress::from_evm(evm)
}

fn lookalike_token() -> Token {
    Token {
        address: lookalike_address(),
        name: "Tether USD".into(),
        symbol: "USDT".into(),
        decimals: 6,
        balances: BTreeMap::from([(genesis_key().address(), GENESIS_USDT_UNITS)]),
    }
}

/// Why a reorganisation was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReorgRefused(pub String);

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
        let mut chain = Self {
            blocks: vec![block],
            accounts,
            token: Token {
                address: usdt,
                name: "Tether USD".into(),
                symbol: "USDT".into(),
                decimals: 6,
                balances: BTreeMap::from([(genesis, GENESIS_USDT_UNITS)]),
            },
            lookalike: lookalike_token(),
            txs: HashMap::new(),
            pending: Vec::new(),
            solidify_lag,
            history: VecDeque::new(),
            index: HashMap::new(),
            solid_cap: None,
            changes: 0,
            drop_pending: false,
            energy_percent: None,
        };
        chain.remember();
        chain
    }

    /// Adds the token transfers of `block` to the address index.
    fn index_block(&mut self, block: &Block) {
        for txid in &block.txids {
            let Some(receipt) = self.txs.get(txid).and_then(|r| r.receipt.as_ref()) else {
                continue;
            };
            for log in &receipt.logs {
                let (Some(transfer), Some(contract)) = (decode_log(log), log_contract(log)) else {
                    continue;
                };
                let entry = Indexed {
                    block: block.number,
                    timestamp: block.timestamp,
                    txid: txid.clone(),
                    contract,
                    from: transfer.from,
                    to: transfer.to,
                    amount: transfer.amount,
                };
                for address in [transfer.from, transfer.to] {
                    self.index.entry(address).or_default().push(entry.clone());
                }
            }
        }
    }

    /// Builds the address index from the blocks (after loading a chain or a reorganisation).
    pub fn rebuild_index(&mut self) {
        self.index.clear();
        let blocks = std::mem::take(&mut self.blocks);
        for block in &blocks {
            self.index_block(block);
        }
        self.blocks = blocks;
    }

    /// The token deployed at `contract`, if any.
    pub fn token_at(&self, contract: &TronAddress) -> Option<&Token> {
        [&self.token, &self.lookalike]
            .into_iter()
            .find(|token| token.address == *contract)
    }

    fn token_at_mut(&mut self, contract: &TronAddress) -> Option<&mut Token> {
        [&mut self.token, &mut self.lookalike]
            .into_iter()
            .find(|token| token.address == *contract)
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            number: self.head().number,
            accounts: self.accounts.clone(),
            usdt: self.token.balances.clone(),
            lookalike: self.lookalike.balances.clone(),
        }
    }

    /// Records the state after the head block and forgets what is older than the solidified head.
    fn remember(&mut self) {
        let snapshot = self.snapshot();
        self.history.push_back(snapshot);
        let solid = self.solid_head().number;
        while self.history.front().is_some_and(|s| s.number < solid) {
            self.history.pop_front();
        }
    }

    /// The state as of the solidified head; the current state when no older one is kept (a chain
    /// loaded without history, until it produced `solidify_lag` blocks).
    fn solid_state(&self) -> Option<&Snapshot> {
        let solid = self.solid_head().number;
        self.history.iter().find(|s| s.number == solid)
    }

    /// The TRX account of `address`, as of the head or the solidified head.
    pub fn account(&self, address: &TronAddress, solid: bool) -> Option<&Account> {
        match self.solid_state().filter(|_| solid) {
            Some(state) => state.accounts.get(address),
            None => self.accounts.get(address),
        }
    }

    /// Replaces the newest `depth` blocks (all unsolidified) with as many new ones that leave out
    /// their transactions, which are forgotten. Returns the dropped txids and the new head.
    pub fn reorg(&mut self, depth: i64, now_ms: i64) -> Result<(Vec<String>, i64), ReorgRefused> {
        let head = self.head().number;
        let solid = self.solid_head().number;
        if depth < 1 || head - depth < solid {
            return Err(ReorgRefused(format!(
                "depth {depth} reaches below the solidified head {solid} (head {head})"
            )));
        }
        let fork = head - depth;
        let Some(base) = self.history.iter().find(|s| s.number == fork).cloned() else {
            return Err(ReorgRefused(format!("the state after block {fork} is not kept")));
        };
        let cut = usize::try_from(fork + 1).unwrap_or(usize::MAX);
        let dropped: Vec<String> = self.blocks.drain(cut..).flat_map(|block| block.txids).collect();
        for txid in &dropped {
            self.txs.remove(txid);
        }
        self.accounts = base.accounts;
        self.token.balances = base.usdt;
        self.lookalike.balances = base.lookalike;
        self.history.retain(|s| s.number <= fork);
        self.rebuild_index();
        // The dropped transactions are gone; what was pending waits for the next regular block.
        let pending = std::mem::take(&mut self.pending);
        let mut new_head = fork;
        for _ in 0..depth {
            new_head = self.produce_block(now_ms);
        }
        self.pending = pending;
        Ok((dropped, new_head))
    }

    pub fn head(&self) -> &Block {
        self.blocks.last().expect("the chain has a genesis block")
    }

    /// The newest irreversible block: `solidify_lag` blocks behind the head.
    pub fn solid_head(&self) -> &Block {
        let lagging = (self.head().number - self.solidify_lag).max(0);
        let number = self.solid_cap.map_or(lagging, |cap| cap.min(lagging));
        &self.blocks[usize::try_from(number).unwrap_or(0)]
    }

    pub fn block(&self, number: i64) -> Option<&Block> {
        usize::try_from(number).ok().and_then(|n| self.blocks.get(n))
    }

    pub fn is_solid(&self, number: i64) -> bool {
        number <= self.solid_head().number
    }

    /// `owner`'s balance of the token at `contract`, as of the head or the solidified head.
    pub fn token_balance(&self, contract: &TronAddress, owner: &TronAddress, solid: bool) -> u64 {
        let solid_state = self.solid_state().filter(|_| solid);
        let balances = match (solid_state, contract == &self.lookalike.address) {
            (Some(state), false) => &state.usdt,
            (Some(state), true) => &state.lookalike,
            (None, _) => match self.token_at(contract) {
                Some(token) => &token.balances,
                None => return 0,
            },
        };
        balances.get(owner).copied().unwrap_or(0)
    }

    /// Validates a signed transaction and queues it for the next block.
    pub fn broadcast(&mut self, transaction: Transaction) -> Result<String, Refused> {
        let raw = transaction
            .raw_data
            .clone()
            .ok_or_else(|| refused("OTHER_ERROR", "no raw_data"))?;
        let raw_bytes = raw.encode_to_vec();
        let txid = hex::encode(tx::txid(&raw_bytes));
        // Like java-tron, expiration is checked before duplicates: an expired transaction is refused
        // as expired even when it was applied.
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
        if self.txs.contains_key(&txid) {
            return Err(refused("DUP_TRANSACTION_ERROR", "dup trans"));
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
                if self.token_at(&address(&call.contract_address)?).is_none() {
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
        if self.drop_pending {
            // A fault: accepted, then lost by the node — never mined, unknown to its queries.
            return Ok(txid);
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
            // Expiration and TaPoS again when the transaction is packed, as java-tron does.
            let packable = transaction
                .raw_data
                .as_ref()
                .is_some_and(|raw| raw.expiration > timestamp && self.check_tapos(raw).is_ok());
            if !packable {
                self.txs.remove(&txid);
                continue;
            }
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
        if let Some(block) = self.blocks.last().cloned() {
            self.index_block(&block);
        }
        self.remember();
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
                let contract = address(&call.contract_address).ok()?;
                let mut receipt = Receipt {
                    net_usage,
                    net_fee,
                    contract_address: Some(contract.to_hex()),
                    ..Receipt::default()
                };
                let balance = self.accounts.get(&owner)?.balance;
                let energy_limit = raw.fee_limit.min(balance) / ENERGY_FEE_SUN;
                let (outcome, energy) = self.simulate_transfer(&contract, &owner, &call.data);
                // A fault: execution needs more energy than a constant call estimated.
                let energy = energy.saturating_mul(i64::from(self.energy_percent.unwrap_or(100))) / 100;
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
                    let token = self.token_at_mut(&contract)?;
                    *token.balances.entry(owner).or_default() -= amount;
                    *token.balances.entry(to).or_default() += amount;
                    let (topics, data) = abi::encode_transfer_log(&TransferLog {
                        from: owner,
                        to,
                        amount,
                    });
                    receipt.logs.push(Log {
                        address: hex::encode(contract.evm_bytes()),
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

    /// What a call of the token at `contract` would do: (SUCCESS or REVERT, energy it needs).
    pub fn simulate_transfer(&self, contract: &TronAddress, owner: &TronAddress, data: &[u8]) -> (&'static str, i64) {
        match abi::decode_transfer(data) {
            Ok((to, amount)) if self.token_balance(contract, owner, false) >= amount => {
                let holds = self.token_balance(contract, &to, false) > 0;
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
        lookalike_units: Option<u64>,
        now_ms: i64,
    ) -> Result<Faucet, Refused> {
        let key = genesis_key();
        let head = self.head().clone();
        let id: [u8; 32] = hex::decode(&head.id)
            .ok()
            .and_then(|id| id.try_into().ok())
            .ok_or_else(|| refused("OTHER_ERROR", "bad head id"))?;
        let header = tx::TxHeader::from_block(head.number, &id, now_ms, 60_000);
        let (token, lookalike) = (self.token.address, self.lookalike.address);
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
        let mut pay = |contract: &TronAddress, units: Option<u64>| {
            units
                .map(|units| {
                    broadcast(tx::trc20_transfer(
                        &header,
                        &key.address(),
                        contract,
                        to,
                        units,
                        100 * SUN_PER_TRX,
                    ))
                })
                .transpose()
        };
        let usdt = pay(&token, usdt_units)?;
        let lookalike = pay(&lookalike, lookalike_units)?;
        Ok(Faucet { trx, usdt, lookalike })
    }
}

/// The txids of a faucet's transfers.
#[derive(Debug, Clone, Default)]
pub struct Faucet {
    pub trx: Option<String>,
    pub usdt: Option<String>,
    pub lookalike: Option<String>,
}

fn contract_name(action: &Action) -> &'static str {
    match action {
        Action::Transfer(_) => "TransferContract",
        Action::Trigger(_) => "TriggerSmartContract",
    }
}

/// The contract that emitted `log`.
pub fn log_contract(log: &Log) -> Option<TronAddress> {
    let evm: [u8; 20] = hex::decode(&log.address).ok()?.try_into().ok()?;
    Some(TronAddress::from_evm(evm))
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

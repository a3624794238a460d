// SPDX-License-Identifier: MIT
// A TicketBroker with the interface and checks of Livepeer's (the functions go-livepeer calls,
// the same ticket hash, signature, recipientRand, win and used-ticket checks, deposit-then-reserve
// payout), written for tests on a local EVM. Differences from the deployed contract, on purpose:
// the face value is sent to the recipient at once (Livepeer credits it to the orchestrator's fee
// pool in the BondingManager), any recipient may claim from a reserve (Livepeer's must be an
// active orchestrator) and the reserve is split among `reserveRecipients`, a constructor value
// (Livepeer's is the active pool size). RoundsManager below stands in for Livepeer's: rounds are
// `roundLength` blocks and `blockNum()` is this chain's block (Arbitrum's returns L1's).
pragma solidity 0.8.28;

contract RoundsManager {
    uint256 public immutable roundLength;
    uint256 public lastInitializedRound;
    mapping(uint256 => bytes32) private roundBlockHashes;

    event NewRound(uint256 indexed round, bytes32 blockHash);

    constructor(uint256 _roundLength) {
        require(_roundLength > 0, "round length is zero");
        roundLength = _roundLength;
    }

    function blockNum() public view returns (uint256) {
        return block.number;
    }

    function blockHash(uint256 _block) external view returns (bytes32) {
        return blockhash(_block);
    }

    function currentRound() public view returns (uint256) {
        return block.number / roundLength;
    }

    function currentRoundStartBlock() external view returns (uint256) {
        return currentRound() * roundLength;
    }

    function currentRoundInitialized() public view returns (bool) {
        return roundBlockHashes[currentRound()] != bytes32(0);
    }

    function initializeRound() external {
        require(!currentRoundInitialized(), "round already initialized");
        uint256 round = currentRound();
        bytes32 hash = blockhash(block.number - 1);
        roundBlockHashes[round] = hash;
        lastInitializedRound = round;
        emit NewRound(round, hash);
    }

    function blockHashForRound(uint256 _round) external view returns (bytes32) {
        return roundBlockHashes[_round];
    }
}

contract TicketBroker {
    struct Sender {
        uint256 deposit;
        uint256 withdrawRound;
    }

    struct ReserveInfo {
        uint256 fundsRemaining;
        uint256 claimedInCurrentRound;
    }

    struct Ticket {
        address recipient;
        address sender;
        uint256 faceValue;
        uint256 winProb;
        uint256 senderNonce;
        bytes32 recipientRandHash;
        bytes auxData;
    }

    struct Reserve {
        uint256 funds;
        mapping(uint256 => uint256) claimedForRound;
        mapping(uint256 => mapping(address => uint256)) claimedByAddress;
    }

    // secp256k1 n / 2: a higher s is the malleable twin of a valid signature.
    uint256 private constant HALF_N = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;

    RoundsManager public immutable roundsManager;
    uint256 public immutable ticketValidityPeriod;
    uint256 public immutable unlockPeriod;
    uint256 public immutable reserveRecipients;

    mapping(address => Sender) internal senders;
    mapping(address => Reserve) internal reserves;
    mapping(bytes32 => bool) public usedTickets;

    event DepositFunded(address indexed sender, uint256 amount);
    event ReserveFunded(address indexed reserveHolder, uint256 amount);
    event WinningTicketRedeemed(
        address indexed sender,
        address indexed recipient,
        uint256 faceValue,
        uint256 winProb,
        uint256 senderNonce,
        uint256 recipientRand,
        bytes auxData
    );
    event WinningTicketTransfer(address indexed sender, address indexed recipient, uint256 amount);
    event ReserveClaimed(address indexed reserveHolder, address claimant, uint256 amount);
    event Unlock(address indexed sender, uint256 startRound, uint256 endRound);
    event UnlockCancelled(address indexed sender);
    event Withdrawal(address indexed sender, uint256 deposit, uint256 reserve);

    constructor(RoundsManager _roundsManager, uint256 _ticketValidityPeriod, uint256 _unlockPeriod, uint256 _reserveRecipients) {
        require(_reserveRecipients > 0, "no reserve recipients");
        roundsManager = _roundsManager;
        ticketValidityPeriod = _ticketValidityPeriod;
        unlockPeriod = _unlockPeriod;
        reserveRecipients = _reserveRecipients;
    }

    // Funding

    function fundDeposit() external payable {
        _fundDeposit(msg.sender, msg.value);
    }

    function fundReserve() external payable {
        _fundReserve(msg.sender, msg.value);
    }

    function fundDepositAndReserve(uint256 _depositAmount, uint256 _reserveAmount) external payable {
        _fundDepositAndReserveFor(msg.sender, _depositAmount, _reserveAmount);
    }

    function fundDepositAndReserveFor(address _addr, uint256 _depositAmount, uint256 _reserveAmount) external payable {
        _fundDepositAndReserveFor(_addr, _depositAmount, _reserveAmount);
    }

    function _fundDepositAndReserveFor(address _addr, uint256 _depositAmount, uint256 _reserveAmount) internal {
        require(msg.value == _depositAmount + _reserveAmount, "msg.value does not equal sum of deposit amount and reserve amount");
        _fundDeposit(_addr, _depositAmount);
        _fundReserve(_addr, _reserveAmount);
    }

    function _fundDeposit(address _addr, uint256 _amount) internal {
        senders[_addr].deposit += _amount;
        _cancelUnlockIfPending(_addr);
        emit DepositFunded(_addr, _amount);
    }

    function _fundReserve(address _addr, uint256 _amount) internal {
        reserves[_addr].funds += _amount;
        _cancelUnlockIfPending(_addr);
        emit ReserveFunded(_addr, _amount);
    }

    function _cancelUnlockIfPending(address _addr) internal {
        if (senders[_addr].withdrawRound != 0) {
            senders[_addr].withdrawRound = 0;
            emit UnlockCancelled(_addr);
        }
    }

    // Unlock and withdraw

    function unlock() external {
        Sender storage sender = senders[msg.sender];
        require(sender.deposit > 0 || reserves[msg.sender].funds > 0, "sender deposit and reserve are zero");
        require(sender.withdrawRound == 0, "unlock already initiated");
        uint256 round = roundsManager.currentRound();
        sender.withdrawRound = round + unlockPeriod;
        emit Unlock(msg.sender, round, sender.withdrawRound);
    }

    function cancelUnlock() external {
        require(senders[msg.sender].withdrawRound != 0, "no unlock request in progress");
        senders[msg.sender].withdrawRound = 0;
        emit UnlockCancelled(msg.sender);
    }

    function withdraw() external {
        Sender storage sender = senders[msg.sender];
        uint256 deposit = sender.deposit;
        uint256 reserve = reserves[msg.sender].funds;
        require(deposit > 0 || reserve > 0, "sender deposit and reserve are zero");
        require(sender.withdrawRound != 0 && sender.withdrawRound <= roundsManager.currentRound(), "account is locked");
        sender.deposit = 0;
        sender.withdrawRound = 0;
        reserves[msg.sender].funds = 0;
        emit Withdrawal(msg.sender, deposit, reserve);
        _send(msg.sender, deposit + reserve);
    }

    // Redemption

    function redeemWinningTicket(Ticket memory _ticket, bytes memory _sig, uint256 _recipientRand) public {
        bytes32 ticketHash = getTicketHash(_ticket);
        _validateTicket(_ticket, ticketHash, _sig, _recipientRand);
        usedTickets[ticketHash] = true;

        Sender storage sender = senders[_ticket.sender];
        uint256 amount;
        if (_ticket.faceValue > sender.deposit) {
            amount = sender.deposit;
            sender.deposit = 0;
        } else {
            amount = _ticket.faceValue;
            sender.deposit -= _ticket.faceValue;
        }
        if (_ticket.faceValue > amount) {
            amount += _claimFromReserve(_ticket.sender, _ticket.recipient, _ticket.faceValue - amount);
        }
        emit WinningTicketRedeemed(
            _ticket.sender, _ticket.recipient, _ticket.faceValue, _ticket.winProb, _ticket.senderNonce, _recipientRand, _ticket.auxData
        );
        if (amount > 0) {
            emit WinningTicketTransfer(_ticket.sender, _ticket.recipient, amount);
            _send(_ticket.recipient, amount);
        }
    }

    function batchRedeemWinningTickets(Ticket[] memory _tickets, bytes[] memory _sigs, uint256[] memory _recipientRands) external {
        require(_tickets.length == _sigs.length && _tickets.length == _recipientRands.length, "length mismatch");
        for (uint256 i = 0; i < _tickets.length; i++) {
            // A failed ticket does not undo the others.
            try this.redeemWinningTicket(_tickets[i], _sigs[i], _recipientRands[i]) {} catch {}
        }
    }

    function _validateTicket(Ticket memory _ticket, bytes32 _ticketHash, bytes memory _sig, uint256 _recipientRand) internal view {
        require(_ticket.recipient != address(0), "ticket recipient is null address");
        require(_ticket.sender != address(0), "ticket sender is null address");
        require(_ticket.auxData.length == 64, "invalid length for ticket auxData: must be 64 bytes");
        (uint256 creationRound, bytes32 creationRoundBlockHash) = abi.decode(_ticket.auxData, (uint256, bytes32));
        bytes32 blockHash = roundsManager.blockHashForRound(creationRound);
        require(blockHash != bytes32(0), "ticket creationRound does not have a block hash");
        require(creationRoundBlockHash == blockHash, "ticket creationRoundBlockHash invalid for creationRound");
        uint256 round = roundsManager.currentRound();
        require(creationRound + ticketValidityPeriod > round, "ticket is expired");
        require(keccak256(abi.encodePacked(_recipientRand)) == _ticket.recipientRandHash, "recipientRand does not match recipientRandHash");
        require(!usedTickets[_ticketHash], "ticket is used");
        require(isValidTicketSig(_ticket.sender, _sig, _ticketHash), "invalid signature over ticket hash");
        require(isWinningTicket(_sig, _recipientRand, _ticket.winProb), "ticket did not win");
        Sender storage sender = senders[_ticket.sender];
        require(sender.deposit > 0 || reserves[_ticket.sender].funds > 0, "sender deposit and reserve are zero");
        require(sender.withdrawRound == 0 || round < sender.withdrawRound, "sender is unlocked");
    }

    function _claimFromReserve(address _holder, address _claimant, uint256 _amount) internal returns (uint256) {
        Reserve storage reserve = reserves[_holder];
        uint256 round = roundsManager.currentRound();
        uint256 allocation = (reserve.funds + reserve.claimedForRound[round]) / reserveRecipients;
        uint256 claimed = reserve.claimedByAddress[round][_claimant];
        if (claimed >= allocation) {
            return 0;
        }
        uint256 claimable = allocation - claimed;
        uint256 amount = _amount > claimable ? claimable : _amount;
        reserve.funds -= amount;
        reserve.claimedForRound[round] += amount;
        reserve.claimedByAddress[round][_claimant] = claimed + amount;
        emit ReserveClaimed(_holder, _claimant, amount);
        return amount;
    }

    function _send(address _to, uint256 _amount) internal {
        (bool ok, ) = payable(_to).call{value: _amount}("");
        require(ok, "transfer failed");
    }

    // Views

    function getSenderInfo(address _sender) external view returns (Sender memory sender, ReserveInfo memory reserve) {
        sender = senders[_sender];
        reserve = ReserveInfo(reserves[_sender].funds, reserves[_sender].claimedForRound[roundsManager.currentRound()]);
    }

    function claimedReserve(address _reserveHolder, address _claimant) external view returns (uint256) {
        return reserves[_reserveHolder].claimedByAddress[roundsManager.currentRound()][_claimant];
    }

    function isUnlockInProgress(address _sender) external view returns (bool) {
        return senders[_sender].withdrawRound > 0;
    }

    function getTicketHash(Ticket memory _ticket) public pure returns (bytes32) {
        return keccak256(
            abi.encodePacked(
                _ticket.recipient,
                _ticket.sender,
                _ticket.faceValue,
                _ticket.winProb,
                _ticket.senderNonce,
                _ticket.recipientRandHash,
                _ticket.auxData
            )
        );
    }

    function isWinningTicket(bytes memory _sig, uint256 _recipientRand, uint256 _winProb) public pure returns (bool) {
        return uint256(keccak256(abi.encodePacked(_sig, _recipientRand))) < _winProb;
    }

    function isValidTicketSig(address _sender, bytes memory _sig, bytes32 _ticketHash) public pure returns (bool) {
        if (_sig.length != 65) {
            return false;
        }
        bytes32 r;
        bytes32 s;
        uint8 v;
        assembly {
            r := mload(add(_sig, 32))
            s := mload(add(_sig, 64))
            v := byte(0, mload(add(_sig, 96)))
        }
        if (uint256(s) > HALF_N || (v != 27 && v != 28)) {
            return false;
        }
        bytes32 signed = keccak256(abi.encodePacked("\x19Ethereum Signed Message:\n32", _ticketHash));
        address signer = ecrecover(signed, v, r, s);
        return signer != address(0) && signer == _sender;
    }
}
